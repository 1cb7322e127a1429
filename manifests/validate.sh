#!/usr/bin/env bash
# Renders manifests/ (alone and with the monitoring component) and checks every
# built-in object against Kubernetes 1.37's schemas with kubernetes-validate
# (PyPI), strictly: an unknown field fails. Instances of CRDs (PodMonitor) are
# skipped; the API server's dry run checks those (and the CRDs' own schemas).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
version=1.37.0

# The test tier's kubectl (the newest `cargo xtask setup` built), else PATH's.
kubectl="${KUBECTL:-$(ls -t /var/cache/weft/kube/*/bin/kubectl 2>/dev/null | head -n1 || true)}"
kubectl="${kubectl:-kubectl}"
if ! command -v kubernetes-validate >/dev/null; then
    python3 -m pip install --quiet "kubernetes-validate==$version"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# An overlay that adds the optional component, so its objects are checked too.
mkdir "$work/overlay"
rel="$(realpath --relative-to="$work/overlay" "$here")" # kustomize refuses absolute paths
cat >"$work/overlay/kustomization.yaml" <<YAML
resources: [$rel]
components: [$rel/components/monitoring]
YAML

for target in "$here" "$work/overlay"; do
    "$kubectl" kustomize "$target" >"$work/rendered.yaml"
    # One file per built-in object: core groups and *.k8s.io.
    python3 - "$work/rendered.yaml" "$work/objects" <<'PY'
import os, sys, yaml
out = sys.argv[2]
os.makedirs(out, exist_ok=True)
for i, doc in enumerate(yaml.safe_load_all(open(sys.argv[1]))):
    group = doc["apiVersion"].rpartition("/")[0]
    if "." in group and not group.endswith(".k8s.io"):
        print(f"skip {doc['kind']}/{doc['metadata']['name']} ({group}: a custom resource)")
        continue
    with open(os.path.join(out, f"{i:02}-{doc['kind']}-{doc['metadata']['name']}.yaml"), "w") as f:
        yaml.safe_dump(doc, f)
PY
    kubernetes-validate --strict --quiet --kubernetes-version "$version" "$work/objects"/*.yaml
    echo "$(ls "$work/objects" | wc -l) objects valid for Kubernetes $version: ${target#"$work/"}"
    rm -r "$work/objects"
done
