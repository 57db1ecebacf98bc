#!/bin/sh
echo "bazel coverage is not supported: remote_coverage_tools is an offline stub" >&2
exit 1
