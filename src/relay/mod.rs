//! The durable callback relay: MTS calls back the service, which stores, de-duplicates and forwards.
