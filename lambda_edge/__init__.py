"""AWS Lambda front-ends (see the Lambda issue)."""
