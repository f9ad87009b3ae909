import Foundation

/// Material made with OpenSSL 3.0, so that the CA is tested against what operators' tools
/// produce, not only against itself. Test-only keys; never use them for anything else.
///
///   openssl ecparam -name prime256v1 -genkey -noout -out root.key            # SEC1 key
///   openssl req -new -key root.key -subj "/O=Example Corp/CN=Example mesh root" -out root.csr
///   openssl ca -selfsign -keyfile root.key -in root.csr -startdate 20250101000000Z \
///     -enddate 21250101000000Z -extensions v3_root ...   # CA:TRUE, keyCertSign+cRLSign
///                                                        # (critical), SKI hash, URI SAN
///   openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out wl.key
///   openssl req -new -key wl.key -subj "/CN=frontend" \
///     -addext "subjectAltName=URI:spiffe://cluster.local/ns/shop/sa/frontend" -out wl.csr
enum OpenSSLFixtures {
    static let rootCertificate = """
-----BEGIN CERTIFICATE-----
MIIBuzCCAWKgAwIBAgIBATAKBggqhkjOPQQDAjAzMRUwEwYDVQQKDAxFeGFtcGxl
IENvcnAxGjAYBgNVBAMMEUV4YW1wbGUgbWVzaCByb290MCAXDTI1MDEwMTAwMDAw
MFoYDzIxMjUwMTAxMDAwMDAwWjAzMRUwEwYDVQQKDAxFeGFtcGxlIENvcnAxGjAY
BgNVBAMMEUV4YW1wbGUgbWVzaCByb290MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcD
QgAE+U5Oxj85vvxfzjv3LqYJy5K4GYI33VR+igeHROYC73NbLp9Np5SqNBYkk2mZ
AeHgpwQCtpxnZZjnjRvf58WsSKNlMGMwDwYDVR0TAQH/BAUwAwEB/zAOBgNVHQ8B
Af8EBAMCAQYwHQYDVR0OBBYEFLQgHNPch48pcvMSC7Tct4RAMDizMCEGA1UdEQQa
MBiGFnNwaWZmZTovL2NsdXN0ZXIubG9jYWwwCgYIKoZIzj0EAwIDRwAwRAIgbESp
3vxXUhsGfJnG3e+DcwF2lrYCx5fh7beIk0+Uc2ICIHdP/XEuX4RmYyz9BwNYjfAK
4T9DL1i/vfU7CV57vXK/
-----END CERTIFICATE-----
"""

    static let rootKeySEC1 = """
-----BEGIN EC PRIVATE KEY-----
MHcCAQEEIOfZe2Eyp0f/V7CTQQnmTOWl1boUeAkizgrV3EZbv7CxoAoGCCqGSM49
AwEHoUQDQgAE+U5Oxj85vvxfzjv3LqYJy5K4GYI33VR+igeHROYC73NbLp9Np5Sq
NBYkk2mZAeHgpwQCtpxnZZjnjRvf58WsSA==
-----END EC PRIVATE KEY-----
"""

    static let workloadCSR = """
-----BEGIN CERTIFICATE REQUEST-----
MIIBFTCBvQIBADATMREwDwYDVQQDDAhmcm9udGVuZDBZMBMGByqGSM49AgEGCCqG
SM49AwEHA0IABF3GOojN01Q3vHEwkuEuwVBIXYVD3KGJTD1d1WGRikLM60GEJl6j
7LYLNa6geT8WhIhIVvQRxVC1LaMK4/E0UG+gSDBGBgkqhkiG9w0BCQ4xOTA3MDUG
A1UdEQQuMCyGKnNwaWZmZTovL2NsdXN0ZXIubG9jYWwvbnMvc2hvcC9zYS9mcm9u
dGVuZDAKBggqhkjOPQQDAgNHADBEAiAsjQxIb85AgV50HDuE8fjw7IlNfefR77pC
632qOuE49QIgYinH24EX5LfBXC8RROYFs0eeOP+ZsIGCdNi03ofNkGQ=
-----END CERTIFICATE REQUEST-----
"""
}
