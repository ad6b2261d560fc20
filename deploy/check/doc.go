// Package check holds the validation tests of Hangar's deployment files:
// deploy/k8s (strict decoding into the Kubernetes API types, an in-process
// kustomize build, container and wiring rules) and deploy/observability
// (promtool checks and unit tests of the alert rules, and a cross-check of
// every hangar_* metric the rules and dashboards use against the metrics the
// real services export). It has no code of its own: run `go test ./...`.
package check
