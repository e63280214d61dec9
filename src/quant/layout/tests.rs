//! Property tests: every scheme × format.
