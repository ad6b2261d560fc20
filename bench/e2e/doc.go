// Package e2e holds Hangar's end-to-end benchmarks. They drive the real
// binaries only: `hangarctl dev --keep` runs the whole stack (embedded broker,
// S3-compatible server, policy, gateway, executor with the Docker runtime,
// logship), and the benchmarks talk to it as a control plane would, over MQTT
// with the control plane's certificate and over logship's Tail. The module
// imports no services/* package and none of hangarctl's internal packages.
//
// Run them with bench/run.sh, or:
//
//	cd bench/e2e && go test -run '^$' -bench . -benchtime 5x
package e2e
