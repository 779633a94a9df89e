//! Golden tests: bad runbooks and the exact diagnostics they produce.
