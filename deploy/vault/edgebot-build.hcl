# Build workers run untrusted Dockerfiles: they may read the registry push credentials and nothing else.
# Attach to the AppRole / Kubernetes role the build workers log in with.
path "secret/data/edgebot/build" {
  capabilities = ["read"]
}
