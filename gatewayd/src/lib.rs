//! gatewayd
