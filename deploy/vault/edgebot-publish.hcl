# The publish worker (source, signing, Exchange publish): the signing key, the Exchange credentials and the
# registries' pull credentials that nodes receive as dockauths. Read-only.
path "secret/data/edgebot/publish" {
  capabilities = ["read"]
}

# Private service sources ([services.X.source_auth]): a token or a deploy key per service, one secret each under
# sources/ (e.g. vault:secret/data/edgebot/sources/hello#token). Both roles fetch the source (publish: prepare's
# definitions; build: the checkout it builds).
path "secret/data/edgebot/sources/*" {
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
