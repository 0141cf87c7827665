//! The wharf library.
