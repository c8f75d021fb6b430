"""The same DeepSpeech2 in PyTorch, built the way deepspeech.pytorch builds it: the benchmark's yardstick.

    model = TorchDeepSpeech2(cfg.model, n_bins)            # cfg.model: ds2.config.ModelConfig
    log_probs, out_lengths = model(features, frames)      # [T', B, C], [B]

Same layers and sizes as ds2.model.DeepSpeech2 for any ModelConfig (conv + BatchNorm + activation
twice, masked after every module; BatchNorm before BiLSTM layers 2..n; directions summed or
concatenated; BatchNorm + Linear without bias; log_softmax). The LSTMs run on packed sequences
(pack_padded_sequence), as deepspeech.pytorch does, so the recurrent layers skip the padding of
pad-to-longest batches; the convolutions compute it and mask it. packed=False runs the LSTMs on the
padded batch instead (faster kernels on CPU; the backward direction then starts in the padding).
"""
from __future__ import annotations

import torch

from ds2.shapes import conv_output_length, output_bins


class MaskedConv(torch.nn.Module):
    """Conv2d, BatchNorm2d, activation; padded time steps zeroed after the block."""

    def __init__(self, in_channels, out_channels, kernel, stride, activation: str):
        super().__init__()
        self.kernel, self.stride = tuple(kernel), tuple(stride)
        self.conv = torch.nn.Conv2d(in_channels, out_channels, self.kernel, stride=self.stride,
                                    padding=(self.kernel[0] // 2, self.kernel[1] // 2))
        self.bn = torch.nn.BatchNorm2d(out_channels)
        self.act = torch.nn.Tanh() if activation == "tanh" else torch.nn.Hardtanh(0, 20)

    def forward(self, x, lengths):
        x = self.act(self.bn(self.conv(x)))
        lengths = conv_output_length(lengths, self.kernel[1], self.stride[1])
        padded = torch.arange(x.shape[3]).view(1, 1, 1, -1) >= lengths.view(-1, 1, 1, 1)
        return x.masked_fill(padded, 0), lengths


class PackedBiLSTM(torch.nn.Module):
    """[BatchNorm over every step] + bidirectional LSTM on a packed sequence + merge of directions."""

    def __init__(self, input_size, hidden_size, batch_norm: bool, merge: str, packed: bool = True):
        super().__init__()
        self.bn = torch.nn.BatchNorm1d(input_size) if batch_norm else None
        self.lstm = torch.nn.LSTM(input_size, hidden_size, bidirectional=True)
        self.merge = merge
        self.packed = packed

    def forward(self, x, lengths):
        steps, batch, features = x.shape
        if self.bn is not None:
            x = self.bn(x.reshape(steps * batch, features)).reshape(steps, batch, features)
        if self.packed:
            packed = torch.nn.utils.rnn.pack_padded_sequence(x, lengths, enforce_sorted=False)
            x, _ = torch.nn.utils.rnn.pad_packed_sequence(self.lstm(packed)[0], total_length=steps)
        else:
            x = self.lstm(x)[0]
        if self.merge == "sum":
            return x.view(steps, batch, 2, -1).sum(2)
        return x


class TorchDeepSpeech2(torch.nn.Module):
    def __init__(self, cfg, n_bins: int, packed: bool = True):
        super().__init__()
        channels = cfg.conv_channels
        self.conv = torch.nn.ModuleList([
            MaskedConv(1, channels, cfg.conv1_kernel, cfg.conv1_stride, cfg.activation),
            MaskedConv(channels, channels, cfg.conv2_kernel, cfg.conv2_stride, cfg.activation)])
        rnn_input = channels * output_bins(n_bins, cfg)
        rnn_output = cfg.rnn_hidden * (2 if cfg.rnn_merge == "concat" else 1)
        self.rnns = torch.nn.ModuleList([
            PackedBiLSTM(rnn_input if i == 0 else rnn_output, cfg.rnn_hidden,
                         batch_norm=cfg.rnn_batch_norm and i > 0, merge=cfg.rnn_merge, packed=packed)
            for i in range(cfg.rnn_layers)])
        self.fc_bn = torch.nn.BatchNorm1d(rnn_output)
        self.fc = torch.nn.Linear(rnn_output, len(cfg.labels), bias=False)

    def forward(self, features, frames):
        """features [B, 1, F, T], frames [B] int64 -> log_probs [T', B, C], output lengths [B]."""
        x, lengths = features, frames
        for block in self.conv:
            x, lengths = block(x, lengths)
        batch, channels, rows, steps = x.shape
        x = x.view(batch, channels * rows, steps).permute(2, 0, 1).contiguous()
        for rnn in self.rnns:
            x = rnn(x, lengths)
        logits = self.fc(self.fc_bn(x.reshape(steps * batch, -1))).view(steps, batch, -1)
        return torch.log_softmax(logits, dim=-1), lengths
