"""One rule splits the "name version" model ids back into their parts."""
from viewer.core.model_id import split_model_id


def test_split_model_id():
    assert split_model_id("ct-organs-unet3d 1.1") == ("ct-organs-unet3d", "1.1")
    assert split_model_id("mammo-exam 1.0.1") == ("mammo-exam", "1.0.1")
    assert split_model_id(" my model 2 ") == ("my model", "2")
    assert split_model_id("custom-model") == ("custom-model", "")  # no version: not the name twice
    assert split_model_id("my model vX") == ("my model vX", "")
