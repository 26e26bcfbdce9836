"""What runs write and how: model folders replaced as a whole, Trainer saves without pickles, what a saved folder
says about itself, and the named crash points of the fault-injection tests."""
