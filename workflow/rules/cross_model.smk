# Branch rules: filled in by the branch's issue.
