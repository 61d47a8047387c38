{
  "algorithm": "Ed25519",
  "key_id": "a1f9653be426926e",
  "sha256": "5c8204bb23958e249c818ee4dbf6828e73a8496b7ac9d590484d087304ef9d62",
  "signed_at": "2026-12-03T17:37:30+00:00",
  "signature": "CDIe7ElvCbiZCtPTkHBrn0uCW0J1bZ/vxzJ7pQH7dGJs3pAfmxMi7tpA2mJyLqqN0uEwryvxAvgMgcbPlhIxCQ=="
}
