"""Chat: the shapes a conversation takes, as data; messages, Responses-API items and tool
schemas in, the shape each stage needs out. Imports no other stage, so inputs, engines,
verifiers, agents and exports all speak it."""
