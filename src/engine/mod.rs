//! The run engine: when connectors fire, which window a run covers, and one run's life.

pub mod window;
