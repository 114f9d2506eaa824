//! The operator CLI: talks to a running service over its own JSON-RPC API.
