"""Alipay interop driven by spinpay's Rust tests, using python-alipay-sdk's own code.

stdin: JSON {"op": ..., ...}; stdout: JSON result. Ops:
  verify_request: our signed request params -> the SDK's signature over the same
      params (deterministic PKCS#1 v1.5, so it must be byte-identical) and the SDK's
      `_verify` of our signature.
  sign_notify: the SDK signs a notify the way Alipay does (every field but sign and
      sign_type), returns the urlencoded body.
  sign_response: the SDK signs a sync answer object; also runs the SDK's own
      `_verify_and_return_sync_response` on it as a sanity check.
"""
import json
import sys

from alipay import AliPay


def client(private_pem, public_pem):
    return AliPay(appid="2021000000000001", app_notify_url=None,
                  app_private_key_string=private_pem,
                  alipay_public_key_string=public_pem, sign_type="RSA2")


def verify_request(req):
    params = dict(req["params"])
    ours = params.pop("sign")
    sdk = client(req["private_pem"], req["public_pem"])
    raw = "&".join("{}={}".format(k, v) for k, v in sdk._ordered_data(dict(params)))
    signed = sdk.sign_data(dict(params))
    sdk_sign = None
    from urllib.parse import parse_qsl
    for k, v in parse_qsl(signed, keep_blank_values=True):
        if k == "sign":
            sdk_sign = v
    return {"verified": sdk._verify(raw, ours), "same_signature": sdk_sign == ours,
            "raw": raw}


def sign_notify(req):
    sdk = client(req["private_pem"], req["public_pem"])
    body = sdk.sign_data(dict(req["fields"])) + "&sign_type=RSA2"
    return {"body": body}


def sign_response(req):
    sdk = client(req["private_pem"], req["public_pem"])
    obj = req["object"]
    key = req["response_key"]
    sign = sdk._sign(obj)
    raw = '{"%s":%s,"sign":"%s"}' % (key, obj, sign)
    checked = sdk._verify_and_return_sync_response(raw, key)
    return {"body": raw, "sdk_accepts": bool(checked)}


OPS = {"verify_request": verify_request, "sign_notify": sign_notify,
       "sign_response": sign_response}

if __name__ == "__main__":
    request = json.load(sys.stdin)
    json.dump(OPS[request["op"]](request), sys.stdout)
