/* MD5 (RFC 1321) over bytes, for CHAP (RFC 1994) in the browser: no external library.
   md5Bytes(Uint8Array|number[]) -> number[16]; hexMD5(string) -> hex of its UTF-8 bytes
   (the same name as MikroTik's md5.js, so hotspot pages can use either). */
(function (root) {
  "use strict";
  var S = [7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
           5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
           4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
           6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21];
  var K = [];
  for (var i = 0; i < 64; i++) { K[i] = Math.floor(Math.abs(Math.sin(i + 1)) * 4294967296) | 0; }

  function md5Bytes(input) {
    var len = input.length, nblocks = ((len + 8) >>> 6) + 1, words = new Array(nblocks * 16);
    var j;
    for (j = 0; j < words.length; j++) { words[j] = 0; }
    for (j = 0; j < len; j++) { words[j >> 2] |= (input[j] & 0xff) << ((j % 4) * 8); }
    words[len >> 2] |= 0x80 << ((len % 4) * 8);
    words[nblocks * 16 - 2] = (len * 8) | 0;
    words[nblocks * 16 - 1] = Math.floor(len / 536870912) | 0;
    var a0 = 0x67452301, b0 = 0xefcdab89 | 0, c0 = 0x98badcfe | 0, d0 = 0x10325476;
    for (var blk = 0; blk < words.length; blk += 16) {
      var a = a0, b = b0, c = c0, d = d0;
      for (var r = 0; r < 64; r++) {
        var f, g;
        if (r < 16) { f = (b & c) | (~b & d); g = r; }
        else if (r < 32) { f = (d & b) | (~d & c); g = (5 * r + 1) % 16; }
        else if (r < 48) { f = b ^ c ^ d; g = (3 * r + 5) % 16; }
        else { f = c ^ (b | ~d); g = (7 * r) % 16; }
        var t = d; d = c; c = b;
        var x = (a + f + K[r] + words[blk + g]) | 0;
        b = (b + ((x << S[r]) | (x >>> (32 - S[r])))) | 0;
        a = t;
      }
      a0 = (a0 + a) | 0; b0 = (b0 + b) | 0; c0 = (c0 + c) | 0; d0 = (d0 + d) | 0;
    }
    var out = [], st = [a0, b0, c0, d0];
    for (var w = 0; w < 4; w++) { for (var k = 0; k < 4; k++) { out.push((st[w] >>> (8 * k)) & 0xff); } }
    return out;
  }
  function utf8(s) {
    var out = [];
    for (var i = 0; i < s.length; i++) {
      var c = s.charCodeAt(i);
      if (c < 0x80) { out.push(c); }
      else if (c < 0x800) { out.push(0xc0 | (c >> 6), 0x80 | (c & 63)); }
      else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
        var cp = 0x10000 + ((c - 0xd800) << 10) + (s.charCodeAt(++i) - 0xdc00);
        out.push(0xf0 | (cp >> 18), 0x80 | ((cp >> 12) & 63), 0x80 | ((cp >> 6) & 63), 0x80 | (cp & 63));
      } else { out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63)); }
    }
    return out;
  }
  /* MikroTik's $(chap-id) arrives as a JS string of chars 0-255 (octal escapes). */
  function latin1(s) {
    var out = [];
    for (var i = 0; i < s.length; i++) { out.push(s.charCodeAt(i) & 0xff); }
    return out;
  }
  function toHex(bytes) {
    var h = "";
    for (var i = 0; i < bytes.length; i++) { h += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16); }
    return h;
  }
  function fromHex(h) {
    var out = [];
    for (var i = 0; i + 1 < h.length; i += 2) { out.push(parseInt(h.substr(i, 2), 16)); }
    return out;
  }
  root.md5Bytes = md5Bytes;
  root.utf8Bytes = utf8;
  root.latin1Bytes = latin1;
  root.bytesToHex = toHex;
  root.hexToBytes = fromHex;
  /* MikroTik: hexMD5('$(chap-id)' + password + '$(chap-challenge)') */
  root.hexMD5 = function (s) { return toHex(md5Bytes(latin1(s))); };
})(this);
