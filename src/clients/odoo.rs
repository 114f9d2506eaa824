//! The Odoo JSON-RPC client: reads the OpenG2P registry as an Odoo RPC client.
