"""What outputs a request asks for: renditions, canvas, marketplace profile, metadata and duplicate policies."""
