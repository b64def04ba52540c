/* The portal page: "Get password" asks /api/v1/otp, "Log in" submits to the controller
   (MikroTik PAP / http-chap, CoovaChilli UAM CHAP / PAP — through radiusd's
   /portal/chilli-logon when chilli has a uamsecret — or a generic form POST). */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("portal-data").textContent);
  var ui = data.ui, target = data.target;
  var phone = document.getElementById("phone");
  var code = document.getElementById("code");
  var getButton = document.getElementById("get");
  var form = document.getElementById("login");
  var status = document.getElementById("status");
  var KEY = "radiusd.phone";

  function say(text, kind) {
    status.className = "status " + (kind || "info");
    status.textContent = text;
  }
  if (!phone.value) {
    try { phone.value = sessionStorage.getItem(KEY) || ""; } catch (e) { /* private mode */ }
  }
  if (target.error) { code.focus(); } else if (!phone.value) { phone.focus(); }

  getButton.addEventListener("click", function () {
    var number = phone.value.trim();
    if (!number) { say(ui.need_phone, "error"); phone.focus(); return; }
    try { sessionStorage.setItem(KEY, number); } catch (e) { /* private mode */ }
    getButton.disabled = true;
    say(ui.sending, "info");
    fetch("/api/v1/otp", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ phone: number, device: target.mac || "", language: data.lang })
    }).then(function (r) {
      return r.json().then(function (body) { return { status: r.status, body: body }; });
    }).then(function (res) {
      if (res.status === 202) {
        say(res.body.message, "ok");
        code.value = "";
        code.focus();
      } else {
        say(res.body.message || ui.offline, "error");
        (res.status === 400 ? phone : getButton).focus();
      }
    }).catch(function () {
      say(ui.offline, "error");
    }).then(function () { getButton.disabled = false; });
  });

  function post(url, fields) {
    var f = document.createElement("form");
    f.method = "post";
    f.action = url;
    f.hidden = true;
    Object.keys(fields).forEach(function (name) {
      var input = document.createElement("input");
      input.type = "hidden";
      input.name = name;
      input.value = fields[name];
      f.appendChild(input);
    });
    document.body.appendChild(f);
    f.submit();
  }

  function xorHex(password, challengeHex) {
    var pw = utf8Bytes(password), ch = hexToBytes(challengeHex), out = [];
    for (var i = 0; i < pw.length; i++) { out.push(pw[i] ^ ch[i % ch.length]); }
    return bytesToHex(out);
  }

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var user = phone.value.trim(), password = code.value.trim();
    if (!user) { say(ui.need_phone, "error"); phone.focus(); return; }
    if (!password) { say(ui.need_code, "error"); code.focus(); return; }
    try { sessionStorage.setItem(KEY, user); } catch (e) { /* private mode */ }
    if (target.kind === "mikrotik") {
      var secret = password;
      if (target.chap_id && target.chap_challenge) {
        /* RFC 1994: MD5(identifier + secret + challenge), as MikroTik's login.html does */
        secret = bytesToHex(md5Bytes([].concat(hexToBytes(target.chap_id),
          utf8Bytes(password), hexToBytes(target.chap_challenge))));
      }
      post(target.url, { username: user, password: secret, dst: target.dst || "",
                         popup: "true" });
    } else if (target.kind === "chilli" && !target.challenge) {
      /* no challenge (or an all-zero one): the code would go out in clear */
      say(ui.bad_target, "error");
    } else if (target.kind === "chilli" && target.logon) {
      /* chilli has a uamsecret: radiusd checks chilli's signed redirect (this page's
         URL, md=...), answers the challenge and redirects to /logon */
      post(target.logon, { page: window.location.href, username: user,
                           password: password, lang: data.lang });
    } else if (target.kind === "chilli") {
      var q = "username=" + encodeURIComponent(user);
      if (target.pap) {
        q += "&password=" + xorHex(password, target.challenge);
      } else {
        /* CoovaChilli UAM CHAP: identifier 0, the challenge from the redirect */
        q += "&response=" + bytesToHex(md5Bytes([0].concat(utf8Bytes(password),
          hexToBytes(target.challenge))));
      }
      if (target.dst) { q += "&userurl=" + encodeURIComponent(target.dst); }
      window.location.href = target.url + "?" + q;
    } else if (target.kind === "form") {
      var fields = {};
      fields[target.user_field] = user;
      fields[target.pass_field] = password;
      if (target.dst) { fields.dst = target.dst; }
      post(target.url, fields);
    } else {
      say(ui.no_controller, "error");
    }
  });
})();
