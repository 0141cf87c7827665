//! Load generator (to come).
fn main() {}
