module github.com/hangar-dev/hangar/bench/e2e

go 1.26.0

require (
	github.com/eclipse/paho.mqtt.golang v1.5.1
	github.com/hangar-dev/hangar/gen/go v0.0.0
	github.com/hangar-dev/hangar/platform v0.0.0
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/minio/xxml v0.0.3 // indirect
	github.com/rclone/gofakes3 v0.0.12 // indirect
	github.com/ryszard/goskiplist v0.0.0-20150312221310-2dfbae5fcf46 // indirect
	github.com/shabbyrobe/gocovmerge v0.0.0-20230507112040-c3350d9342df // indirect
	golang.org/x/tools v0.49.0 // indirect
)

require (
	github.com/gorilla/websocket v1.5.3 // indirect
	github.com/hangar-dev/hangar/test/e2e v0.0.0
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sync v0.25.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260928230214-8a89bd6388cc // indirect
)

replace github.com/hangar-dev/hangar/gen/go => ../../gen/go

replace github.com/hangar-dev/hangar/platform => ../../platform

replace github.com/hangar-dev/hangar/test/e2e => ../../test/e2e
