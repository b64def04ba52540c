"""Checks of the RADIUS dictionaries in dictionaries/ (loaded with pyrad)."""

import re
from pathlib import Path

import pytest
from pyrad.dictionary import Dictionary

DICT_DIR = Path(__file__).resolve().parent.parent / "dictionaries"
ROOT = DICT_DIR / "dictionary"


@pytest.fixture(scope="module")
def rad_dict() -> Dictionary:
    return Dictionary(str(ROOT))


def _value(d: Dictionary, attr: str, name: str) -> int:
    return int.from_bytes(d[attr].values.GetForward(name), "big")


def _included_files(path: Path, seen: set[Path]) -> None:
    path = path.resolve()
    if path in seen:
        return
    seen.add(path)
    for line in path.read_text().splitlines():
        tokens = line.split("#", 1)[0].split()
        if tokens and tokens[0].upper() in ("$INCLUDE", "$INCLUDE-"):
            _included_files(path.parent / tokens[1], seen)


def _definitions():
    """Yield (file, line number, kind, tokens, vendor) for every statement."""
    seen: set[Path] = set()
    _included_files(ROOT, seen)
    for path in sorted(seen):
        vendor = ""
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            tokens = line.split("#", 1)[0].split()
            if not tokens:
                continue
            kind = tokens[0].upper()
            if kind == "BEGIN-VENDOR":
                vendor = tokens[1]
            elif kind == "END-VENDOR":
                vendor = ""
            yield path.name, lineno, kind, tokens, vendor


def test_loads_without_skipping_anything_but_vendor_specific(rad_dict):
    # Vendor-Specific is typed "vsa" for FreeRADIUS; pyrad handles type 26
    # itself and skips that definition. Nothing else may be skipped.
    assert rad_dict.skipped_attributes == {"Vendor-Specific"}
    assert len(rad_dict.attributes) > 300


def test_every_file_is_reachable_from_root():
    seen: set[Path] = set()
    _included_files(ROOT, seen)
    on_disk = {p.resolve() for p in DICT_DIR.iterdir() if p.is_file()}
    assert on_disk - seen == set()
    assert seen - on_disk == set()


def test_every_file_cites_its_source():
    for path in DICT_DIR.iterdir():
        first = path.read_text().splitlines()[0]
        assert first.startswith("#"), path.name
        if path.name != "dictionary":
            head = "\n".join(path.read_text().splitlines()[:8])
            assert re.search(r"RFC \d+|Source:", head), path.name


def test_no_duplicate_names_or_codes():
    vendors: dict[str, int] = {"": 0}
    names: dict[str, str] = {}
    codes: dict[tuple[int, str], str] = {}
    values: dict[tuple[str, str], str] = {}
    for fname, lineno, kind, tokens, vendor in _definitions():
        where = f"{fname}:{lineno}"
        if kind == "VENDOR":
            assert tokens[1] not in vendors, where
            assert int(tokens[2], 0) not in vendors.values(), where
            vendors[tokens[1]] = int(tokens[2], 0)
        elif kind == "ATTRIBUTE":
            name, code = tokens[1], tokens[2]
            assert name.lower() not in names, f"{name} at {where} and {names.get(name.lower())}"
            names[name.lower()] = where
            key = (vendors[vendor], code)
            assert key not in codes, f"{key} at {where} and {codes.get(key)}"
            codes[key] = where
        elif kind == "VALUE":
            vkey = (tokens[1].lower(), tokens[2].lower())
            assert vkey not in values, f"{vkey} at {where}"
            values[vkey] = where


def test_vendor_blocks_are_closed():
    open_vendor = ""
    for fname, lineno, kind, tokens, _vendor in _definitions():
        if kind == "BEGIN-VENDOR":
            assert open_vendor == "", f"{fname}:{lineno}"
            open_vendor = tokens[1]
        elif kind == "END-VENDOR":
            assert tokens[1] == open_vendor, f"{fname}:{lineno}"
            open_vendor = ""
    assert open_vendor == ""


@pytest.mark.parametrize(
    "name, code, datatype",
    [
        ("User-Name", 1, "string"),
        ("User-Password", 2, "string"),
        ("CHAP-Password", 3, "octets"),
        ("NAS-IP-Address", 4, "ipaddr"),
        ("State", 24, "octets"),
        ("Class", 25, "octets"),
        ("Called-Station-Id", 30, "string"),
        ("Calling-Station-Id", 31, "string"),
        ("Acct-Status-Type", 40, "integer"),
        ("Acct-Session-Id", 44, "string"),
        ("Acct-Terminate-Cause", 49, "integer"),
        ("Acct-Input-Gigawords", 52, "integer"),
        ("Acct-Output-Gigawords", 53, "integer"),
        ("Event-Timestamp", 55, "date"),
        ("CHAP-Challenge", 60, "octets"),
        ("NAS-Port-Type", 61, "integer"),
        ("Tunnel-Private-Group-Id", 81, "string"),
        ("Connect-Info", 77, "string"),
        ("EAP-Message", 79, "octets"),
        ("Message-Authenticator", 80, "octets"),
        ("Acct-Interim-Interval", 85, "integer"),
        ("NAS-Port-Id", 87, "string"),
        ("Framed-Pool", 88, "string"),
        ("NAS-IPv6-Address", 95, "ipv6addr"),
        ("Framed-Interface-Id", 96, "ifid"),
        ("Framed-IPv6-Prefix", 97, "ipv6prefix"),
        ("Error-Cause", 101, "integer"),
        ("Delegated-IPv6-Prefix", 123, "ipv6prefix"),
        ("Operator-Name", 126, "string"),
        ("Requested-Location-Info", 132, "integer"),
        ("Framed-IPv6-Address", 168, "ipv6addr"),
    ],
)
def test_standard_attributes(rad_dict, name, code, datatype):
    attr = rad_dict[name]
    assert (attr.code, attr.type, attr.vendor) == (code, datatype, "")
    assert rad_dict.attrindex.GetForward(name) == code


def test_password_encryption_flags(rad_dict):
    assert rad_dict["User-Password"].encrypt == 1
    assert rad_dict["Tunnel-Password"].encrypt == 2
    assert rad_dict["Tunnel-Password"].has_tag
    assert rad_dict["MS-MPPE-Send-Key"].encrypt == 2
    assert rad_dict["MS-MPPE-Recv-Key"].encrypt == 2


def test_standard_values(rad_dict):
    assert _value(rad_dict, "Acct-Status-Type", "Start") == 1
    assert _value(rad_dict, "Acct-Status-Type", "Stop") == 2
    assert _value(rad_dict, "Acct-Status-Type", "Interim-Update") == 3
    assert _value(rad_dict, "Acct-Status-Type", "Accounting-On") == 7
    assert _value(rad_dict, "Acct-Status-Type", "Accounting-Off") == 8
    assert _value(rad_dict, "Service-Type", "Login-User") == 1
    assert _value(rad_dict, "Service-Type", "Framed-User") == 2
    assert _value(rad_dict, "Service-Type", "Authorize-Only") == 17
    assert _value(rad_dict, "NAS-Port-Type", "Virtual") == 5
    assert _value(rad_dict, "NAS-Port-Type", "Ethernet") == 15
    assert _value(rad_dict, "NAS-Port-Type", "Wireless-802.11") == 19
    assert _value(rad_dict, "Termination-Action", "RADIUS-Request") == 1
    assert _value(rad_dict, "Acct-Authentic", "RADIUS") == 1
    assert _value(rad_dict, "Tunnel-Type", "VLAN") == 13
    assert _value(rad_dict, "Tunnel-Medium-Type", "IEEE-802") == 6
    causes = rad_dict["Acct-Terminate-Cause"].values
    assert sorted(int.from_bytes(causes.GetForward(k), "big") for k in causes.forward) == list(
        range(1, 23)
    )
    assert _value(rad_dict, "Acct-Terminate-Cause", "Idle-Timeout") == 4
    assert _value(rad_dict, "Acct-Terminate-Cause", "Session-Timeout") == 5


def test_error_cause_values(rad_dict):
    assert _value(rad_dict, "Error-Cause", "Residual-Context-Removed") == 201
    assert _value(rad_dict, "Error-Cause", "Unsupported-Attribute") == 401
    assert _value(rad_dict, "Error-Cause", "Missing-Attribute") == 402
    assert _value(rad_dict, "Error-Cause", "Invalid-Request") == 404
    assert _value(rad_dict, "Error-Cause", "Session-Context-Not-Found") == 503
    assert _value(rad_dict, "Error-Cause", "Request-Initiated") == 507


@pytest.mark.parametrize(
    "name, vendor, vendor_id, code, datatype",
    [
        ("Mikrotik-Rate-Limit", "Mikrotik", 14988, 8, "string"),
        ("Mikrotik-Recv-Limit", "Mikrotik", 14988, 1, "integer"),
        ("Mikrotik-Address-List", "Mikrotik", 14988, 19, "string"),
        ("WISPr-Location-ID", "WISPr", 14122, 1, "string"),
        ("WISPr-Logoff-URL", "WISPr", 14122, 3, "string"),
        ("WISPr-Redirection-URL", "WISPr", 14122, 4, "string"),
        ("WISPr-Bandwidth-Max-Down", "WISPr", 14122, 8, "integer"),
        ("ChilliSpot-Max-Total-Octets", "ChilliSpot", 14559, 3, "integer"),
        ("ChilliSpot-Bandwidth-Max-Up", "ChilliSpot", 14559, 4, "integer"),
        ("ChilliSpot-Interval", "ChilliSpot", 14559, 102, "integer"),
        ("Cisco-AVPair", "Cisco", 9, 1, "string"),
        ("Cisco-Account-Info", "Cisco", 9, 250, "string"),
        ("Aruba-User-Role", "Aruba", 14823, 1, "string"),
        ("Aruba-User-Vlan", "Aruba", 14823, 2, "integer"),
        ("Aruba-MPSK-Passphrase", "Aruba", 14823, 44, "octets"),
        ("Ruckus-User-Groups", "Ruckus", 25053, 1, "string"),
        ("Ruckus-Sta-RSSI", "Ruckus", 25053, 2, "integer"),
        ("MS-CHAP-Challenge", "Microsoft", 311, 11, "octets"),
        ("MS-CHAP2-Response", "Microsoft", 311, 25, "octets"),
        ("MS-CHAP2-Success", "Microsoft", 311, 26, "octets"),
        ("MS-MPPE-Send-Key", "Microsoft", 311, 16, "octets"),
        ("MS-Primary-DNS-Server", "Microsoft", 311, 28, "ipaddr"),
        ("Ubiquiti-Data-Rate-DL", "Ubiquiti", 41112, 1, "integer64"),
    ],
)
def test_vendor_attributes(rad_dict, name, vendor, vendor_id, code, datatype):
    attr = rad_dict[name]
    assert (attr.vendor, attr.code, attr.type) == (vendor, code, datatype)
    assert rad_dict.vendors.GetForward(vendor) == vendor_id
    assert rad_dict.attrindex.GetForward(name) == (vendor_id, code)


def test_vendor_values(rad_dict):
    assert _value(rad_dict, "MS-MPPE-Encryption-Policy", "Encryption-Required") == 2
    assert _value(rad_dict, "Mikrotik-Wireless-Enc-Algo", "AES-CCM") == 3
    assert _value(rad_dict, "Service-Type", "ChilliSpot-Authorize-Only") == 0x38DF0001


def test_packet_round_trip(rad_dict):
    """Vendor and standard attributes encode and decode through pyrad."""
    from pyrad.packet import AcctPacket, AuthPacket

    req = AuthPacket(secret=b"testing123", dict=rad_dict, authenticator=b"\x01" * 16)
    req["User-Name"] = "alice"
    req["Mikrotik-Rate-Limit"] = "2M/4M"
    req["WISPr-Bandwidth-Max-Down"] = 1000000
    req["Framed-IPv6-Prefix"] = "2001:db8::/64"
    req["NAS-Port-Type"] = "Wireless-802.11"
    decoded = AuthPacket(secret=b"testing123", dict=rad_dict, packet=req.RequestPacket())
    assert decoded["User-Name"] == ["alice"]
    assert decoded["Mikrotik-Rate-Limit"] == ["2M/4M"]
    assert decoded["WISPr-Bandwidth-Max-Down"] == [1000000]
    assert decoded["Framed-IPv6-Prefix"] == ["2001:db8::/64"]
    assert decoded["NAS-Port-Type"] == ["Wireless-802.11"]

    acct = AcctPacket(secret=b"testing123", dict=rad_dict)
    acct["Acct-Status-Type"] = "Interim-Update"
    acct["Acct-Input-Gigawords"] = 2
    decoded = AcctPacket(secret=b"testing123", dict=rad_dict, packet=acct.RequestPacket())
    assert decoded["Acct-Status-Type"] == ["Interim-Update"]
    assert decoded["Acct-Input-Gigawords"] == [2]
