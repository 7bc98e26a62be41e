# The publish worker (source, signing, Exchange publish): the signing key, the Exchange credentials and the
# registries' pull credentials that nodes receive as dockauths. Read-only.
path "secret/data/edgebot/publish" {
  capabilities = ["read"]
}
