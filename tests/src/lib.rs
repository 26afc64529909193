//! Shared helpers of the cross-process tests.
