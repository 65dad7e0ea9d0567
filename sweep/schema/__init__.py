"""The study file and what it declares: schema, search space, sampler and pruner builders."""
