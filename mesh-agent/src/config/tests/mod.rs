mod bad_inputs;
mod limits;
mod roundtrip;
mod watch;
