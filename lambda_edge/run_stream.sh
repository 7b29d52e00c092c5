#!/bin/sh
# The streaming function's "handler" (deploy/sam/template.yaml: StreamFunction). The Lambda
# Web Adapter layer's /opt/bootstrap (AWS_LAMBDA_EXEC_WRAPPER) runs
# $LAMBDA_TASK_ROOT/$_HANDLER in place of the Python runtime's own bootstrap, so the import
# path that runtime would set up is set here: the function code, then the layers' folders
# (/opt/python and /opt/python/lib/pythonX.Y/site-packages). The server listens on
# AWS_LWA_PORT (8080), where the adapter forwards Function URL requests once GET /healthz
# answers.
path="${LAMBDA_TASK_ROOT:-/var/task}:/opt/python"
for d in /opt/python/lib/python3*/site-packages; do
    [ -d "$d" ] && path="$path:$d"
done
export PYTHONPATH="$path${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m lambda_edge.stream_server
