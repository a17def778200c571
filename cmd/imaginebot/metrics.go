package main

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/imaginebot/imaginebot/core"
)

// metrics is the Prometheus side of the packages' metrics interfaces, on a
// registry of its own (no global state). Every label is bounded: platforms,
// model names from the configuration, core's codes, Bot API method names,
// status classes — never a user, a chat, a prompt or a token.
type metrics struct {
	reg *prometheus.Registry

	jobs        *prometheus.CounterVec
	refusals    *prometheus.CounterVec
	refunds     *prometheus.CounterVec
	generation  *prometheus.HistogramVec
	attempts    *prometheus.CounterVec
	retries     *prometheus.CounterVec
	calls       *prometheus.CounterVec
	tooMany     *prometheus.CounterVec
	fallbacks   *prometheus.CounterVec
	commits     prometheus.Histogram
	commitSizes prometheus.Histogram
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "imaginebot_" + name, Help: help}, labels)
		m.reg.MustRegister(c)
		return c
	}
	m.jobs = counter("jobs_total", "Jobs that held a reservation, by how they ended (delivered, or why refunded).", "platform", "model", "outcome")
	m.refusals = counter("refusals_total", "Requests refused before reserving: rate limits, quotas, bans, full queue, invalid prompts.", "platform", "reason")
	m.refunds = counter("refunds_total", "Reserved units given back, by reason (interrupted: at start-up, after a crash).", "reason")
	m.attempts = counter("upstream_attempts_total", "Requests to the gateway, by outcome.", "model", "outcome")
	m.retries = counter("upstream_retries_total", "Requests to the gateway that were tried again.", "model")
	m.calls = counter("platform_calls_total", "Calls to a chat platform's API, by method and status class.", "platform", "method", "status")
	m.tooMany = counter("platform_429_total", "Calls a chat platform answered 429 Too Many Requests.", "platform", "method")
	m.fallbacks = counter("delivery_fallbacks_total", "Results that could not go as a photo: document, re-encoded, link.", "platform", "kind")
	m.generation = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "imaginebot_upstream_generation_seconds", Help: "Whole generations, retries and downloads included, by outcome.",
		Buckets: []float64{1, 2, 5, 10, 20, 30, 45, 60, 90, 120, 180, 300, 600},
	}, []string{"model", "outcome"})
	m.commits = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "imaginebot_ledger_commit_seconds", Help: "Ledger transaction commits, fsync included.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14),
	})
	m.commitSizes = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "imaginebot_ledger_commit_updates", Help: "Updates sharing one committed transaction (group commit).",
		Buckets: []float64{1, 2, 4, 8, 16, 32, 64, 128, 256},
	})
	m.reg.MustRegister(m.generation, m.commits, m.commitSizes,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// watch adds the pipeline's gauges, read at each scrape.
func (m *metrics) watch(svc *core.Service) {
	gauge := func(name, help string, read func(core.Stats) int) {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "imaginebot_" + name, Help: help},
			func() float64 { return float64(read(svc.Stats())) }))
	}
	gauge("queue_depth", "Jobs waiting for an upstream slot.", func(s core.Stats) int { return s.Queued })
	gauge("jobs_running", "Jobs holding an upstream slot.", func(s core.Stats) int { return s.Running })
	gauge("jobs_in_flight", "Jobs reserved and not settled yet.", func(s core.Stats) int { return s.InFlight })
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

func outcome(c core.Code) string {
	if c == "" {
		return "delivered"
	}
	return string(c)
}

// core.Metrics

func (m *metrics) Refused(p core.Platform, code core.Code) {
	m.refusals.WithLabelValues(string(p), string(code)).Inc()
}

func (m *metrics) JobDone(p core.Platform, model string, c core.Code) {
	m.jobs.WithLabelValues(string(p), model, outcome(c)).Inc()
	if c != "" {
		m.refunds.WithLabelValues(string(c)).Inc()
	}
}

func (m *metrics) Recovered(c core.Code) { m.refunds.WithLabelValues(string(c)).Inc() }

// upstream.Metrics

func (m *metrics) Attempt(model string, c core.Code, retry bool) {
	m.attempts.WithLabelValues(model, outcome(c)).Inc()
	if retry {
		m.retries.WithLabelValues(model).Inc()
	}
}

func (m *metrics) Generated(model string, c core.Code, d time.Duration) {
	m.generation.WithLabelValues(model, outcome(c)).Observe(d.Seconds())
}

// commit is bolt's commit observer.
func (m *metrics) commit(calls int, d time.Duration) {
	m.commits.Observe(d.Seconds())
	m.commitSizes.Observe(float64(calls))
}

// platform is one platform's telegram.Metrics (and, alike, Discord's).
type platform struct {
	m    *metrics
	name string
}

func (m *metrics) platform(name string) platform { return platform{m, name} }

func (p platform) Call(method string, status int) {
	p.m.calls.WithLabelValues(p.name, method, statusClass(status)).Inc()
	if status == http.StatusTooManyRequests {
		p.m.tooMany.WithLabelValues(p.name, method).Inc()
	}
}

func (p platform) Fallback(kind string) { p.m.fallbacks.WithLabelValues(p.name, kind).Inc() }

// statusClass keeps the status label to a handful of values.
func statusClass(status int) string {
	switch {
	case status == 0:
		return "error"
	case status == http.StatusTooManyRequests:
		return "429"
	}
	return strconv.Itoa(status/100) + "xx"
}
