#!/usr/bin/env python3
"""Certificates for Weft's mTLS tests, good and bad (needs `cryptography`).

  certs.py leaf --ca-cert C --ca-key K --spiffe URI --out PREFIX [--kind KIND]

writes PREFIX.crt and PREFIX.key (ECDSA P-256). KIND:
  good         signed by the given CA, valid now, clientAuth+serverAuth
  expired      valid from 2 days ago until 1 day ago
  notyet       valid from tomorrow
  serveronly   extendedKeyUsage serverAuth only (no clientAuth)
  selfsigned   the leaf signs itself (the CA is not used)
  othertd      signed by a fresh CA of its own (another trust domain's);
               its CA goes to PREFIX-ca.crt
Prints one JSON line: {"cert": ..., "key": ..., "ca": ...}.
"""
import argparse
import datetime
import json

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def make_ca(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now() - datetime.timedelta(minutes=5))
        .not_valid_after(now() + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    leaf = sub.add_parser("leaf")
    leaf.add_argument("--ca-cert")
    leaf.add_argument("--ca-key")
    leaf.add_argument("--spiffe", required=True)
    leaf.add_argument("--out", required=True)
    leaf.add_argument("--kind", default="good",
                      choices=["good", "expired", "notyet", "serveronly", "selfsigned", "othertd"])
    args = p.parse_args()

    key = ec.generate_private_key(ec.SECP256R1())
    ca_out = None
    if args.kind == "othertd":
        issuer_cert, issuer_key = make_ca("another-mesh-ca")
        ca_out = args.out + "-ca.crt"
        with open(ca_out, "wb") as f:
            f.write(issuer_cert.public_bytes(serialization.Encoding.PEM))
    elif args.kind == "selfsigned":
        issuer_cert, issuer_key = None, key
    else:
        with open(args.ca_cert, "rb") as f:
            issuer_cert = x509.load_pem_x509_certificate(f.read())
        with open(args.ca_key, "rb") as f:
            issuer_key = serialization.load_pem_private_key(f.read(), password=None)

    start, end = now() - datetime.timedelta(minutes=1), now() + datetime.timedelta(hours=1)
    if args.kind == "expired":
        start, end = now() - datetime.timedelta(days=2), now() - datetime.timedelta(days=1)
    elif args.kind == "notyet":
        start, end = now() + datetime.timedelta(days=1), now() + datetime.timedelta(days=2)
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    if args.kind == "serveronly":
        usages = [ExtendedKeyUsageOID.SERVER_AUTH]

    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Weft test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer_cert.subject if issuer_cert is not None else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(args.spiffe)]), critical=False)
    )
    cert = builder.sign(issuer_key, hashes.SHA256())
    with open(args.out + ".crt", "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(args.out + ".key", "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    print(json.dumps({"cert": args.out + ".crt", "key": args.out + ".key", "ca": ca_out}), flush=True)


if __name__ == "__main__":
    main()
