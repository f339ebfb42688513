"""WeChat Pay v3 interop driven by spinpay's Rust tests, using wechatpayv3's own code.

stdin: JSON {"op": ..., ...}; stdout: JSON result. Ops:
  callback: produce a callback the way WeChat Pay does — resource encrypted with
      AEAD_AES_256_GCM under the APIv3 key, headers signed with wechatpayv3's
      `rsa_sign` over "timestamp\\nnonce\\nbody\\n" — and check that wechatpayv3's own
      `Core.callback` accepts it.
  verify_request: our Authorization header against wechatpayv3's `build_authorization`
      (same time and nonce: byte-identical) and its `rsa_verify`; our app order
      signature against `Core.sign`.
"""
import base64
import json
import sys
import time
from unittest import mock

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from wechatpayv3.core import Core
from wechatpayv3.utils import build_authorization, load_private_key, load_public_key, rsa_sign, rsa_verify


def callback(req):
    platform_key = load_private_key(req["platform_private_pem"])
    aad, nonce = req["associated_data"], req["resource_nonce"]
    ct = AESGCM(req["apiv3_key"].encode()).encrypt(nonce.encode(), req["plaintext"].encode(), aad.encode())
    body = json.dumps({
        "id": "EV-2018022511223320873", "create_time": "2024-03-01T00:30:05+08:00",
        "resource_type": "encrypt-resource", "event_type": req["event_type"], "summary": "ok",
        "resource": {"original_type": "transaction", "algorithm": "AEAD_AES_256_GCM",
                     "ciphertext": base64.b64encode(ct).decode(), "associated_data": aad,
                     "nonce": nonce}}, ensure_ascii=False)
    ts, hnonce = str(req["timestamp"]), req["header_nonce"]
    headers = {"Wechatpay-Timestamp": ts, "Wechatpay-Nonce": hnonce,
               "Wechatpay-Signature": rsa_sign(platform_key, "%s\n%s\n%s\n" % (ts, hnonce, body)),
               "Wechatpay-Serial": req["serial"],
               "Wechatpay-Signature-Type": "WECHATPAY2-SHA256-RSA2048"}
    core = Core(mchid=req["mchid"], cert_serial_no="ANY", private_key=req["merchant_private_pem"],
                apiv3_key=req["apiv3_key"], public_key=req["platform_public_pem"],
                public_key_id=req["serial"])
    decoded = core.callback(headers, body)
    return {"headers": headers, "body": body,
            "sdk_accepts": decoded is not None and decoded["resource"] == json.loads(req["plaintext"])}


def parse_authorization(header):
    scheme, rest = header.split(" ", 1)
    fields = dict(part.split("=", 1) for part in rest.split(","))
    return scheme, {k: v.strip('"') for k, v in fields.items()}


def verify_request(req):
    scheme, f = parse_authorization(req["authorization"])
    private_key = load_private_key(req["merchant_private_pem"])
    public_key = load_public_key(req["merchant_public_pem"])
    with mock.patch.object(time, "time", return_value=int(f["timestamp"])):
        sdk_header = build_authorization(req["path"], req["method"], f["mchid"], f["serial_no"],
                                         private_key, data=req["body"], nonce_str=f["nonce_str"])
    # rsa_verify signs "a\nb\nc\n": feeding METHOD, URL and "ts\nnonce\nbody" rebuilds
    # exactly the request's "METHOD\nURL\nts\nnonce\nbody\n".
    verified = rsa_verify(req["method"], req["path"],
                          "%s\n%s\n%s" % (f["timestamp"], f["nonce_str"], req["body"]),
                          f["signature"], public_key)
    app = req["app_order"]
    core = Core(mchid=f["mchid"], cert_serial_no=f["serial_no"], private_key=req["merchant_private_pem"],
                apiv3_key="0" * 32, public_key=req["merchant_public_pem"], public_key_id="X")
    app_sign = core.sign([app["appid"], app["timestamp"], app["noncestr"], app["prepayid"]])
    return {"scheme": scheme, "same_header": sdk_header == req["authorization"],
            "verified": verified, "same_app_sign": app_sign == app["sign"]}


OPS = {"callback": callback, "verify_request": verify_request}

if __name__ == "__main__":
    request = json.load(sys.stdin)
    json.dump(OPS[request["op"]](request), sys.stdout)
