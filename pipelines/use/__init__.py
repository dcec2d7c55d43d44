"""Using a trained model: load it (predictors), score it (scoring, pretrained), show it (sheets),
and the verbs apply, serve (serving) and export."""
