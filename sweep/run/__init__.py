"""Running a study: the trial loop, the objective, following a trial's events, progress."""
