//! Prometheus metrics: counters and histograms the service exposes on `/metrics`.
