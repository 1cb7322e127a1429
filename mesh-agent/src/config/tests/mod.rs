mod bad_inputs;
mod grants;
mod limits;
mod roundtrip;
mod watch;
