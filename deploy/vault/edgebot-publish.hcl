# The publish worker (source, signing, Exchange publish): the signing key, the Exchange credentials and the
# registries' pull credentials that nodes receive as dockauths. Read-only.
path "secret/data/edgebot/publish" {
  capabilities = ["read"]
}

# With [signing] transit_key = "edgebot-signing": sign with that Transit key (the private key never leaves Vault)
# and read its public key (uploaded to the Exchange). No export, no rotation, no other key. Drop these two blocks
# when signing with a PEM key from KV; rename the key if yours is called otherwise.
path "transit/sign/edgebot-signing" {
  capabilities = ["update"]
}

path "transit/keys/edgebot-signing" {
  capabilities = ["read"]
}
