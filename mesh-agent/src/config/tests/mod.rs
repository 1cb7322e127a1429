mod bad_inputs;
