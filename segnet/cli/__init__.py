"""The command-line front-ends, and nothing else: each parses its flags into library calls, turns the
library's events and log records into lines on stderr (data on stdout), and chooses the exit code.

    console   segnet-console, segnet, python -m segnet
    eval      segnet-eval
    bench     segnet-bench
    train     segnet-train
    download  segnet-download-models
    common    what they share: parsers generated from ``segnet.Options``, logging set-up, the error guard
"""
