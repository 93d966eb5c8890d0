"""The inspector: a small web application to look at what audiorec recommends
(``audiorec ui``). It talks to a running server through the public gRPC API and reads the
work directory's published artifacts and reports; it never imports training."""
