"""Published test vectors through the native primitives (p3hw.dataplane).

GCM: the test cases of McGrew & Viega, "The Galois/Counter Mode of
Operation" (AES-128 cases 1-6, AES-256 cases 13-16). CCM: RFC 3610 packet
vectors (8- and 10-octet tags). CTR: RFC 3686 §6 vectors.
"""

from __future__ import annotations

import pytest

from p3hw import dataplane
from p3hw.reasons import P3Error

h = bytes.fromhex

K3 = h("feffe9928665731c6d6a8f9467308308")
IV3 = h("cafebabefacedbaddecaf888")
P3 = h("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
       "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255")
A4 = h("feedfacedeadbeeffeedfacedeadbeefabaddad2")

GCM_CASES = [
    # (name, cipher, key, iv, aad, plaintext, ciphertext, tag)
    ("tc1", "aes-128-gcm", bytes(16), bytes(12), b"", b"", b"", h("58e2fccefa7e3061367f1d57a4e7455a")),
    ("tc2", "aes-128-gcm", bytes(16), bytes(12), b"", bytes(16), h("0388dace60b6a392f328c2b971b2fe78"),
     h("ab6e47d42cec13bdf53a67b21257bddf")),
    ("tc3", "aes-128-gcm", K3, IV3, b"", P3,
     h("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
       "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985"),
     h("4d5c2af327cd64a62cf35abd2ba6fab4")),
    ("tc4", "aes-128-gcm", K3, IV3, A4, P3[:60],
     h("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e"
       "21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091"),
     h("5bc94fbc3221a5db94fae95ae7121a47")),
    ("tc5-64bit-iv", "aes-128-gcm", K3, h("cafebabefacedbad"), A4, P3[:60],
     h("61353b4c2806934a777ff51fa22a4755699b2a714fcdc6f83766e5f97b6c7423"
       "73806900e49f24b22b097544d4896b424989b5e1ebac0f07c23f4598"),
     h("3612d2e79e3b0785561be14aaca2fccb")),
    ("tc6-480bit-iv", "aes-128-gcm", K3,
     h("9313225df88406e555909c5aff5269aa6a7a9538534f7da1e4c303d2a318a728"
       "c3c0c95156809539fcf0e2429a6b525416aedbf5a0de6a57a637b39b"), A4, P3[:60],
     h("8ce24998625615b603a033aca13fb894be9112a5c3a211a8ba262a3cca7e2ca7"
       "01e4a9a4fba43c90ccdcb281d48c7c6fd62875d2aca417034c34aee5"),
     h("619cc5aefffe0bfa462af43c1699d050")),
    ("tc13", "aes-256-gcm", bytes(32), bytes(12), b"", b"", b"", h("530f8afbc74536b9a963b4f1c4cb738b")),
    ("tc14", "aes-256-gcm", bytes(32), bytes(12), b"", bytes(16), h("cea7403d4d606b6e074ec5d3baf39d18"),
     h("d0d1c8a799996bf0265b98b5d48ab919")),
    ("tc15", "aes-256-gcm", K3 + K3, IV3, b"", P3,
     h("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
       "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad"),
     h("b094dac5d93471bdec1a502270e3cc6c")),
    ("tc16", "aes-256-gcm", K3 + K3, IV3, A4, P3[:60],
     h("522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
       "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"),
     h("76fc6ece0f4e1768cddf8853bb2d551b")),
]

CCM_KEY = h("c0c1c2c3c4c5c6c7c8c9cacbcccdcecf")
CCM_CASES = [
    # RFC 3610 §8: (name, nonce, header length, payload, expected ciphertext ‖ tag, tag length)
    ("packet-vector-1", h("00000003020100a0a1a2a3a4a5"), 8, bytes(range(8, 31)),
     h("588c979a61c663d2f066d0c2c0f989806d5f6b61dac38417e8d12cfdf926e0"), 8),
    ("packet-vector-2", h("00000004030201a0a1a2a3a4a5"), 8, bytes(range(8, 32)),
     h("72c91a36e135f8cf291ca894085c87e3cc15c439c9e43a3ba091d56e10400916"), 8),
    ("packet-vector-7", h("00000009080706a0a1a2a3a4a5"), 8, bytes(range(8, 31)),
     h("0135d1b2c95f41d5d1d4fec185d166b8094e999dfed96c048c56602c97acbb7490"), 10),
]

CTR_CASES = [
    # RFC 3686 §6: (name, key, nonce ‖ IV ‖ counter 1, plaintext, ciphertext)
    ("tv1-aes128", h("ae6852f8121067cc4bf7a5765577f39e"), h("00000030" "0000000000000000" "00000001"),
     b"Single block msg", h("e4095d4fb7a7b3792d6175a3261311b8")),
    ("tv2-aes128", h("7e24067817fae0d743d6ce1f32539163"), h("006cb6db" "c0543b59da48d90b" "00000001"),
     bytes(range(32)), h("5104a106168a72d9790d41ee8edad388eb2e1efc46da57c8fce630df9141be28")),
    ("tv7-aes256", h("776beff2851db06f4c8a0542c8696f6c6a81af1eec96b4d37fc1d689e6c1c104"),
     h("00000060" "db5672c97aa8f0b2" "00000001"), b"Single block msg", h("145ad01dbf824ec7560863dc71e3e0c0")),
]


@pytest.mark.parametrize("name,cipher,key,iv,aad,plaintext,ciphertext,tag", GCM_CASES, ids=[c[0] for c in GCM_CASES])
def test_gcm_spec_vectors_seal_and_open(name: str, cipher: str, key: bytes, iv: bytes, aad: bytes,
                                        plaintext: bytes, ciphertext: bytes, tag: bytes) -> None:
    sealed = dataplane.aead_seal(cipher, key, iv, aad, plaintext)
    assert sealed == ciphertext + tag
    assert dataplane.aead_open(cipher, key, iv, aad, sealed) == plaintext


@pytest.mark.parametrize("name,nonce,header_len,payload,expected,tag_len", CCM_CASES, ids=[c[0] for c in CCM_CASES])
def test_rfc3610_ccm_packet_vectors(name: str, nonce: bytes, header_len: int, payload: bytes,
                                    expected: bytes, tag_len: int) -> None:
    header = bytes(range(header_len))
    sealed = dataplane.aead_seal("aes-128-ccm", CCM_KEY, nonce, header, payload, tag_len=tag_len)
    assert sealed == expected
    assert dataplane.aead_open("aes-128-ccm", CCM_KEY, nonce, header, sealed, tag_len=tag_len) == payload


@pytest.mark.parametrize("name,key,block,plaintext,ciphertext", CTR_CASES, ids=[c[0] for c in CTR_CASES])
def test_rfc3686_ctr_vectors(name: str, key: bytes, block: bytes, plaintext: bytes, ciphertext: bytes) -> None:
    assert dataplane.aes_ctr(key, block, plaintext) == ciphertext
    assert dataplane.aes_ctr(key, block, ciphertext) == plaintext


def test_rfc4231_hmac_sha256_case_2() -> None:
    # RFC 4231 §4.3 (the HMAC under RFC 4868's HMAC-SHA-256-128)
    mac = dataplane.hmac_sha256(b"Jefe", b"what do ya want for nothing?")
    assert mac.hex() == "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"


@pytest.mark.parametrize("cipher", dataplane.AEAD_CIPHERS)
def test_tampered_tag_is_rejected_with_auth_reason(cipher: str) -> None:
    key = bytes(range(32))[: 16 if "128" in cipher else 32]
    nonce = bytes(12) if "gcm" in cipher else bytes(11)
    sealed = bytearray(dataplane.aead_seal(cipher, key, nonce, b"aad", b"payload bytes"))
    sealed[-1] ^= 1
    with pytest.raises(P3Error) as err:
        dataplane.aead_open(cipher, key, nonce, b"aad", bytes(sealed))
    assert err.value.code == "P3-E202"


def test_bad_cipher_name_and_key_length_are_reason_coded() -> None:
    with pytest.raises(P3Error) as err:
        dataplane.aead_seal("aes-128-ocb", bytes(16), bytes(12), b"", b"x")
    assert err.value.code == "P3-E211"
    with pytest.raises(P3Error) as err:
        dataplane.aead_seal("aes-256-gcm", bytes(16), bytes(12), b"", b"x")
    assert err.value.code == "P3-E211"
    with pytest.raises(P3Error) as err:
        dataplane.aead_seal("aes-128-ccm", bytes(16), bytes(20), b"", b"x")
    assert err.value.code == "P3-E214"
