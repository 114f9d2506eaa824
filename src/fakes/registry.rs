//! A fake OpenG2P registry (Odoo JSON-RPC over res.partner and g2p.reg.id) for tests.
