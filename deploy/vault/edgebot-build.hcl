# Build workers run untrusted Dockerfiles: they may read the registry push credentials and nothing else.
# Attach to the AppRole / Kubernetes role the build workers log in with.
path "secret/data/edgebot/build" {
  capabilities = ["read"]
}

# Build secrets of [services.X.build] secrets (builder = "buildah"): one KV entry per service or team under
# edgebot/build/, e.g. secrets = { npmrc = "vault:secret/data/edgebot/build/hello#npmrc" }. Mounted into RUN steps
# only (RUN --mount=type=secret), never into a layer.
path "secret/data/edgebot/build/*" {
  capabilities = ["read"]
}

# Private service sources ([services.X.source_auth]): a token or a deploy key per service, one secret each under
# sources/ (e.g. vault:secret/data/edgebot/sources/hello#token). Both roles fetch the source (publish: prepare's
# definitions; build: the checkout it builds).
path "secret/data/edgebot/sources/*" {
  capabilities = ["read"]
}
