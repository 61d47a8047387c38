{
  "algorithm": "Ed25519",
  "key_id": "a1f9653be426926e",
  "sha256": "adc623751813314837f814836266d7e56ee3d6338e59a7e782f352d955b8abda",
  "signed_at": "2026-12-03T17:37:31+00:00",
  "signature": "w5BoxcXQikkjTLvpOxzKJgOV6UAaowqMzqJtAIOKCSmXJSbEKGoxkJKIFQIGx9vf267tz/GX2mp0nbMuqbb0AA=="
}
