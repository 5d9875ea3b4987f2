"""The commands above the packages they call: ``diffattr measure`` (behaviors of a model or
a folder of images), ``diffattr estimate`` (an estimator on a table of evaluated coalitions)
and ``diffattr prune`` (prune and fine-tune a model). ``diffattr.cli`` registers them; each
imports its packages (and torch) only when it runs, so ``diffattr --help`` stays fast."""
