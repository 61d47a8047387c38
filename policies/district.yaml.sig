{
  "algorithm": "Ed25519",
  "key_id": "a1f9653be426926e",
  "sha256": "a03dbc7e4944030608fefc4c157bc94429676600853cd0677e3945accee7da94",
  "signed_at": "2026-12-03T17:27:15+00:00",
  "signature": "c9iKEDW+1Axx8wgDegjvDgo7/26rKGycrVSWevZr2mFlyiX7AjavmfVOr/mFHqxQHB+96TF0GnHX4qxog++VBg=="
}
