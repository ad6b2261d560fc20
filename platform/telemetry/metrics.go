package telemetry

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// NewRegistry returns a fresh Prometheus registry holding the Go runtime and
// process collectors, and hangar_service_info{service, go_version} 1 so that
// every scrape names the service. It never touches the default registry.
func NewRegistry(service string) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "hangar_service_info",
			Help:        "Always 1; labels name the Hangar service and its Go version.",
			ConstLabels: prometheus.Labels{"service": service, "go_version": runtime.Version()},
		}, func() float64 { return 1 }),
	)
	return reg
}
