//! cram engine
