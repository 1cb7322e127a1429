mod bad_inputs;
mod roundtrip;
mod watch;
