#!/usr/bin/env python3
"""Writes the seed corpus of the libFuzzer targets that read binary messages (Tests/Fuzz/corpus/{dns,frames,der,
kpasswd}): well-formed messages of each kind the engine reads, and the edge cases the parsers were fixed for. The
text targets' seeds (json, saslauthd, toml) are files written by hand. Run from the repository root; the output
is committed, so a run only matters after a change here."""
import os
import struct

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Fuzz", "corpus")


def write(target, name, data):
    directory = os.path.join(ROOT, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, name), "wb") as file:
        file.write(bytes(data))


# DNS (RFC 1035): the fuzz target reads each input as the answer to _kerberos._udp.example.test SRV and to
# kdc.example.test A and AAAA, with the message's own ID.
def name(text):
    return b"".join(bytes([len(label)]) + label.encode() for label in text.split(".") if label) + b"\0"


def header(ident, flags, qd, an, ns=0, ar=0):
    return struct.pack(">HHHHHH", ident, flags, qd, an, ns, ar)


def record(owner, rtype, ttl, data):
    return owner + struct.pack(">HHIH", rtype, 1, ttl, len(data)) + data


def srv(priority, weight, port, target):
    return struct.pack(">HHH", priority, weight, port) + target


SRV_NAME = "_kerberos._udp.example.test"
HOST = "kdc.example.test"
question_srv = name(SRV_NAME) + struct.pack(">HH", 33, 1)
question_a = name(HOST) + struct.pack(">HH", 1, 1)
question_aaaa = name(HOST) + struct.pack(">HH", 28, 1)

write("dns", "srv-two", header(0x1234, 0x8180, 1, 2) + question_srv
      + record(b"\xc0\x0c", 33, 300, srv(0, 10, 88, name("kdc1.example.test")))
      + record(b"\xc0\x0c", 33, 60, srv(1, 5, 750, b"\x04kdc2\xc0\x1b")))
write("dns", "a-and-aaaa", header(0x0001, 0x8180, 1, 2) + question_a
      + record(b"\xc0\x0c", 1, 120, bytes([192, 0, 2, 7]))
      + record(b"\xc0\x0c", 1, 30, bytes([192, 0, 2, 8])))
write("dns", "aaaa", header(0x0002, 0x8180, 1, 1) + question_aaaa
      + record(b"\xc0\x0c", 28, 120, bytes.fromhex("20010db8000000000000000000000001")))
write("dns", "cname-then-a", header(0x0003, 0x8180, 1, 2) + question_a
      + record(b"\xc0\x0c", 5, 300, name("alias.example.test"))
      + record(name("alias.example.test"), 1, 300, bytes([192, 0, 2, 9])))
write("dns", "nxdomain", header(0x0004, 0x8183, 1, 0) + question_srv)
write("dns", "servfail", header(0x0005, 0x8182, 1, 0) + question_srv)
write("dns", "truncated", header(0x0006, 0x8380, 1, 0) + question_srv)
write("dns", "other-question", header(0x0007, 0x8180, 1, 1) + name("_kerberos._udp.evil.test") + struct.pack(">HH", 33, 1)
      + record(b"\xc0\x0c", 33, 300, srv(0, 0, 88, name("evil.test"))))
write("dns", "foreign-owner", header(0x0008, 0x8180, 1, 1) + question_a + record(name("evil.test"), 1, 300, bytes([192, 0, 2, 66])))
# Compression abuse: a chain of pointers, each to the one before, in a TXT record's data; the SRV record's owner
# points at its end (the fix: pointers only before every byte read so far, at most 16 in a name).
start = 12 + len(question_srv) + 12
target = 12
body = b""
for index in range(40):
    body += struct.pack(">H", 0xC000 | target)
    target = start + len(body) - 2
write("dns", "pointer-chain", header(0x0009, 0x8180, 1, 2) + question_srv + record(b"\xc0\x0c", 16, 300, body)
      + record(struct.pack(">H", 0xC000 | target), 33, 300, srv(0, 0, 88, name("kdc.example.test"))))
write("dns", "pointer-loop", header(0x000A, 0x8180, 1, 1) + question_srv + record(b"\xc0\x2d", 33, 300, srv(0, 0, 88, b"\xc0\x2d")))
long_labels = b"".join(b"\x3f" + b"a" * 63 for _ in range(5)) + b"\0"
write("dns", "name-over-255", header(0x000B, 0x8180, 1, 1) + question_srv + record(b"\xc0\x0c", 33, 300, srv(0, 0, 88, long_labels)))
many = header(0x000C, 0x8180, 1, 200) + question_srv
for index in range(200):
    many += record(b"\xc0\x0c", 33, 300, srv(index % 7, index, 88, b"\x01" + bytes([97 + index % 26]) + b"\xc0\x1b"))
write("dns", "many-srv", many)

# KDC replies: DER (RFC 4120).
def tlv(tag, body):
    length = len(body)
    if length < 0x80:
        encoded = bytes([length])
    elif length <= 0xFF:
        encoded = bytes([0x81, length])
    else:
        encoded = bytes([0x82, length >> 8, length & 0xFF])
    return bytes([tag]) + encoded + body


def krb_error(code, e_data=None, crealm=None):
    fields = tlv(0xA0, tlv(0x02, b"\x05")) + tlv(0xA1, tlv(0x02, b"\x1e"))
    fields += tlv(0xA4, tlv(0x18, b"20260101000000Z")) + tlv(0xA5, tlv(0x02, b"\x00")) + tlv(0xA6, tlv(0x02, bytes([code])))
    if crealm:
        fields += tlv(0xA7, tlv(0x1B, crealm.encode()))
    fields += tlv(0xA9, tlv(0x1B, b"EXAMPLE.TEST"))
    fields += tlv(0xAA, tlv(0x30, tlv(0xA0, tlv(0x02, b"\x02")) + tlv(0xA1, tlv(0x30, tlv(0x1B, b"krbtgt") + tlv(0x1B, b"EXAMPLE.TEST")))))
    if e_data is not None:
        fields += tlv(0xAC, tlv(0x04, e_data))
    return tlv(0x7E, tlv(0x30, fields))


def etype_info2(enctype, salt, params=b""):
    entry = tlv(0xA0, tlv(0x02, bytes([enctype])))
    if salt is not None:
        entry += tlv(0xA1, tlv(0x1B, salt.encode()))
    if params:
        entry += tlv(0xA2, tlv(0x04, params))
    info = tlv(0x30, tlv(0x30, entry))
    timestamp = tlv(0x30, tlv(0xA1, tlv(0x02, b"\x02")) + tlv(0xA2, tlv(0x04, b"")))
    return tlv(0x30, timestamp + tlv(0x30, tlv(0xA1, tlv(0x02, b"\x13")) + tlv(0xA2, tlv(0x04, info))))


preauth = krb_error(25, etype_info2(18, "EXAMPLE.TESTalice", b"\x00\x00\x10\x00"))
write("der", "preauth-required", preauth)
write("der", "preauth-no-salt", krb_error(25, etype_info2(17, None)))
write("der", "response-too-big", krb_error(52))
write("der", "wrong-realm", krb_error(68, crealm="OTHER.EXAMPLE.TEST"))
write("der", "as-rep-prefix", tlv(0x6B, tlv(0x30, tlv(0xA0, tlv(0x02, b"\x05")) + tlv(0xA1, tlv(0x02, b"\x0b")))))
write("der", "long-form-length", b"\x7e\x84\x00\x00\x00\x05\x30\x03\x02\x01\x05")

# TCP framing: the first byte picks the prefix (even: 4 bytes, odd: 2) and the piece size (byte >> 1, plus one).
write("frames", "kdc-one-piece", bytes([0xFE]) + struct.pack(">I", len(preauth)) + preauth)
write("frames", "kdc-small-pieces", bytes([0x06]) + struct.pack(">I", len(preauth)) + preauth + struct.pack(">I", 5) + b"\x7e\x03\x30\x01\x00")
write("frames", "kdc-reserved-bit", bytes([0x10]) + b"\x80\x00\x00\x05" + b"\x7e\x03\x30\x01\x00")
write("frames", "dns-two", bytes([0x03]) + struct.pack(">H", 12) + header(1, 0x8180, 0, 0) + struct.pack(">H", 3) + b"abc")

# kpasswd replies (RFC 3244): an unframed KRB-ERROR, and a framed one after an empty AP-REP, with a result in e-data.
soft_error = struct.pack(">H", 4) + b"Password too short"
for label, e_data in [("soft-error", soft_error), ("ad-policy", struct.pack(">H", 4) + bytes(2) + bytes(28))]:
    error = krb_error(60, e_data)
    write("kpasswd", "unframed-" + label, error)
    write("kpasswd", "framed-" + label, struct.pack(">HHH", 6 + len(error), 0xFF80, 0) + error)
write("kpasswd", "sealed", struct.pack(">HHH", 16, 1, 4) + b"\x6f\x02\x30\x00" + b"\x75\x04\x30\x02\x00\x00")
write("kpasswd", "bad-version", struct.pack(">HHH", 6, 2, 0))
