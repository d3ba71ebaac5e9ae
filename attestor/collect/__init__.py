"""Evidence sources on the node, each read at the edge and handed on as bytes."""
