"""What the end-to-end tests, the demo (envoy/demo.py) and the benchmark (bench/) share.

- harness:  real servers on 127.0.0.1, the Envoy launcher, bootstrap and filter configuration, requests
- problems: responses as the tests see them and the checks for problem+json denials and challenges
- keys:     API keys from the real apiguard-keygen and the test configurations built from them
- guards:   Envoys with apiguard loaded in front of the echo upstream, started alone or from a pool
- jwt:      signing keys, JWKs and tokens made at test time, and the checks for JWT refusals
- schema:   the configuration's JSON Schema (schema/apiguard-config.schema.json) and its checks
- mesh:     the OCI image, a real registry and skopeo, Istio's image fetch and WasmPlugin CRD checks

It is installed into the project venv in editable mode (tests/pyproject.toml, `make setup-venv`), so
`import support` works from any script run with .venv/bin/python; pytest also finds it through the
`pythonpath` option in tests/pyproject.toml.
"""
