"""The request pipeline: intake, decide and admit, deliver, settle and record."""
